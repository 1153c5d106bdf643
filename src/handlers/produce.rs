//! Produce (0): validates each partition's record batches (framing, CRC,
//! size), hands them to the writer, and answers once they are durable
//! (acks 1 / -1) or not at all (acks 0). In a cluster, acks=-1 also needs
//! `min.insync.replicas` in the ISR before the append and waits until every
//! ISR member has the batch (the high watermark passed it).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::config::topic::effective_i64;
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::quotas::limiter::QuotaType;
use crate::records::Codec;
use crate::security::acl::{Operation, ResourceType};
use crate::storage::batch::{
    check_records, decompressed_limit, recompress, split_and_validate, stamp_log_append_time,
    RecordRules, ValidBatch,
};
use crate::storage::writer::PartitionAppend;
use crate::types::now_ms;

/// What a topic's configs ask of incoming batches.
struct TopicRules {
    max_batch: usize,
    /// Keys (compacted topics), timestamp bounds, the decompression cap.
    records: RecordRules,
    /// `compression.type` other than `producer`: batches are re-encoded with it.
    codec: Option<Codec>,
    /// `message.timestamp.type=LogAppendTime`.
    log_append_time: bool,
}

impl TopicRules {
    fn of(configs: &BTreeMap<String, String>, raw: &BTreeMap<String, String>, now: i64) -> Self {
        let get = |name: &str, broker_key: &str| {
            configs
                .get(name)
                .or_else(|| raw.get(broker_key))
                .map(String::as_str)
        };
        // `producer` keeps each batch's own codec.
        let codec = get("compression.type", "compression.type").and_then(Codec::from_name);
        let max_batch = effective_i64("max.message.bytes", configs, raw)
            .and_then(|m| usize::try_from(m).ok())
            .unwrap_or(1_048_588);
        let log_append_time =
            get("message.timestamp.type", "log.message.timestamp.type") == Some("LogAppendTime");
        // LogAppendTime replaces the producer's timestamps: nothing to check.
        let timestamps = (!log_append_time).then(|| {
            let before =
                effective_i64("message.timestamp.before.max.ms", configs, raw).unwrap_or(i64::MAX);
            let after =
                effective_i64("message.timestamp.after.max.ms", configs, raw).unwrap_or(i64::MAX);
            (now.saturating_sub(before), now.saturating_add(after))
        });
        TopicRules {
            max_batch,
            records: RecordRules {
                require_keys: get("cleanup.policy", "log.cleanup.policy")
                    .is_some_and(|p| p.split(',').any(|x| x.trim() == "compact")),
                timestamps,
                decompressed_limit: decompressed_limit(max_batch),
            },
            codec,
            log_append_time,
        }
    }

    /// Validates a partition's records and applies the topic's rules. Batches
    /// are rewritten only when a rule asks for it.
    fn prepare(&self, records: Option<&Bytes>, now: i64) -> BrokerResult<Vec<ValidBatch>> {
        let records = records
            .ok_or_else(|| BrokerError::InvalidRecord("Produce request has null records".into()))?;
        let mut batches = split_and_validate(records, self.max_batch)?;
        for v in batches.iter_mut() {
            // Only the transaction coordinator writes markers.
            if v.header.is_control() {
                return Err(BrokerError::InvalidRecord(
                    "Control batches cannot be produced by clients".into(),
                ));
            }
            if v.header.attributes & 0x10 != 0 && !v.header.has_producer_id() {
                return Err(BrokerError::InvalidRecord(
                    "A transactional batch must carry a producer id".into(),
                ));
            }
            let section = check_records(v, &self.records)?;
            if let Some(codec) = self.codec {
                *v = recompress(v, &section, codec)?;
            }
            if self.log_append_time {
                *v = stamp_log_append_time(v, now);
            }
        }
        Ok(batches)
    }
}

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
    // What the producer quota counts: the records sent.
    let sent_bytes: usize = req
        .topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_ref().map(|r| r.len()))
        .sum();
    // Counted before the append, while this request still holds the
    // connection's turn, so that requests pipelined behind it wait.
    let throttle = ctx.throttle(QuotaType::Produce, sent_bytes as f64);
    let now = now_ms();
    // For LogAppendTime topics, the time each append was stamped with.
    let mut append_times: Vec<Option<i64>> = Vec::new();
    // Cluster mode, acks=-1: per append, (topic, partition, offsets it
    // spans, min.insync.replicas) to wait on replication (empty otherwise).
    let replicated = acks == -1 && !b.replicas.is_standalone();
    let mut spans: Vec<(String, i32, i64, i64)> = Vec::new();
    // A transactional producer also needs WRITE on its transactional id.
    let txn_denied = req
        .transactional_id
        .as_ref()
        .is_some_and(|id| !ctx.authorize(Operation::Write, ResourceType::TransactionalId, id));
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
        let denied = if txn_denied {
            Some(BrokerError::TransactionalIdAuthorizationFailed)
        } else {
            let auth_name = topic.as_ref().map_or(name.as_str(), |t| t.name.as_str());
            // An unknown topic id has no name to authorize.
            let unknown_id = ctx.api_version >= 13 && topic.is_err();
            (!unknown_id && !ctx.authorize(Operation::Write, ResourceType::Topic, auth_name))
                .then_some(BrokerError::TopicAuthorizationFailed)
        };
        let rules = topic
            .as_ref()
            .ok()
            .map(|t| TopicRules::of(&t.configs, &b.broker_configs.layers().merged, now));
        let mut slots = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            let slot = if let Some(e) = &denied {
                Slot::Failed(e.clone())
            } else if bad_acks {
                Slot::Failed(BrokerError::InvalidRequiredAcks(acks))
            } else {
                match &topic {
                    Err(e) => Slot::Failed(e.clone()),
                    Ok(t) => match t.partition(pd.index) {
                        None => Slot::Failed(BrokerError::UnknownTopicOrPartition),
                        Some(p) => match super::check_leader(ctx, t.name.as_str(), pd.index, -1)
                            .and_then(|()| {
                                if replicated {
                                    b.replicas.check_min_isr(
                                        t.name.as_str(),
                                        pd.index,
                                        min_isr(&t.configs, &b.broker_configs.layers().merged),
                                    )
                                } else {
                                    Ok(())
                                }
                            })
                            .and_then(|()| {
                                rules.as_ref().ok_or(BrokerError::UnknownTopicOrPartition)
                            })
                            .and_then(|r| r.prepare(pd.records.as_ref(), now))
                        {
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
                                if replicated {
                                    spans.push((
                                        t.name.to_string(),
                                        pd.index,
                                        batches
                                            .iter()
                                            .map(|v| i64::from(v.header.last_offset_delta) + 1)
                                            .sum(),
                                        min_isr(&t.configs, &b.broker_configs.layers().merged),
                                    ));
                                }
                                appends.push(PartitionAppend {
                                    partition: p.clone(),
                                    batches,
                                });
                                append_times.push(
                                    rules
                                        .as_ref()
                                        .is_some_and(|r| r.log_append_time)
                                        .then_some(now),
                                );
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
        layout.push((td.name, td.topic_id, topic.is_ok(), slots));
    }

    // Cluster mode: the first batch of a transaction on a partition is
    // checked with the producer's transaction coordinator (KIP-890); a batch
    // that fails is refused by the writer's gate, with this error.
    let unverified = match req.transactional_id.as_ref() {
        Some(id) if !b.replicas.is_standalone() => verify_transactional(b, id, &appends).await,
        _ => HashMap::new(),
    };
    if acks == 0 {
        if !appends.is_empty() {
            b.writer.append_detached(appends).await;
        }
        ctx.release_turn();
        // No answer carries the throttle time: the muted connection is all.
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
        let mut outcomes = done.await;
        for (i, e) in unverified {
            if let Some(o @ Err(_)) = outcomes.get_mut(i) {
                *o = Err(e);
            }
        }
        if replicated {
            let deadline = tokio::time::Instant::now()
                + std::time::Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0));
            let waits = outcomes
                .iter()
                .zip(&spans)
                .map(|(o, (topic, index, span, min))| {
                    let end = o.as_ref().ok().map(|base| base + span);
                    async move {
                        match end {
                            Some(end) => {
                                b.replicas
                                    .await_replicated(topic, *index, end, *min, deadline)
                                    .await
                            }
                            None => Ok(()),
                        }
                    }
                });
            let replicated = futures::future::join_all(waits).await;
            for (o, r) in outcomes.iter_mut().zip(replicated) {
                if let (Ok(_), Err(e)) = (&*o, r) {
                    *o = Err(e);
                }
            }
        }
        outcomes
    };

    let mut responses = Vec::with_capacity(layout.len());
    let mut error_counts: BTreeMap<i16, u64> = BTreeMap::new();
    // Leaders named in KIP-951 hints: their endpoints go in the answer.
    let mut hinted: std::collections::BTreeSet<i32> = Default::default();
    for (name, topic_id, known, slots) in layout {
        // Only existing topics get series: a client must not be able to
        // grow the metrics page by naming topics that do not exist.
        let label = known.then(|| name.0.to_string());
        if let Some(l) = &label {
            b.metrics.produce_requests.with_label_values(&[l]).inc();
        }
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
                        .map(|base| {
                            (
                                base,
                                snapshot[i].log_start_offset(),
                                append_times.get(i).copied().flatten(),
                            )
                        }),
                };
                let mut r = PartitionProduceResponse::default()
                    .with_index(index)
                    .with_log_append_time_ms(-1);
                match result {
                    Ok((base, log_start, append_time)) => r
                        .with_base_offset(base)
                        .with_log_start_offset(log_start)
                        .with_log_append_time_ms(append_time.unwrap_or(-1)),
                    Err(e) => {
                        topic_failed = true;
                        if ctx.api_version >= 10 && matches!(e, BrokerError::NotLeaderOrFollower) {
                            if let Some((leader, epoch)) =
                                super::current_leader(ctx, name.0.as_str(), index)
                            {
                                hinted.insert(leader);
                                r = r.with_current_leader(
                                    LeaderIdAndEpoch::default()
                                        .with_leader_id(BrokerId(leader))
                                        .with_leader_epoch(epoch),
                                );
                            }
                        }
                        *error_counts.entry(e.code()).or_default() += 1;
                        r.with_error_code(e.code())
                            .with_base_offset(-1)
                            .with_log_start_offset(-1)
                            .with_error_message(e.message())
                            .with_record_errors(record_errors(&e, ctx.api_version))
                    }
                }
            })
            .collect();
        if let (true, Some(l)) = (topic_failed, &label) {
            b.metrics
                .failed_produce_requests
                .with_label_values(&[l])
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
    super::delay_for_old_clients(ctx, throttle, 6).await;
    let node_endpoints = ctx
        .broker_endpoints()
        .into_iter()
        .filter(|(id, ..)| hinted.contains(id))
        .map(|(id, host, port, rack)| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(i32::from(port))
                .with_rack(rack.map(StrBytes::from_string))
        })
        .collect();
    Some(
        ProduceResponse::default()
            .with_responses(responses)
            .with_throttle_time_ms(throttle)
            .with_node_endpoints(node_endpoints),
    )
}

/// The topic's `min.insync.replicas` (its own or the broker default).
/// The appends holding a transactional batch whose partition the writer's
/// gate does not admit yet, verified with the transaction coordinator per
/// producer; the failures, by append index.
async fn verify_transactional(
    b: &crate::broker::Broker,
    txn_id: &str,
    appends: &[PartitionAppend],
) -> HashMap<usize, BrokerError> {
    // (producer id, epoch) → (append index, topic, partition, uid).
    type Wanted = BTreeMap<(i64, i16), Vec<(usize, String, i32, u64)>>;
    let mut wanted = Wanted::new();
    for (i, a) in appends.iter().enumerate() {
        let p = &a.partition;
        if let Some(h) = a.batches.iter().map(|v| &v.header).find(|h| {
            h.attributes & 0x10 != 0
                && h.has_producer_id()
                && !h.is_control()
                && !b
                    .txns
                    .active()
                    .admits(h.producer_id, h.producer_epoch, p.uid)
        }) {
            wanted
                .entry((h.producer_id, h.producer_epoch))
                .or_default()
                .push((i, p.topic.to_string(), p.id.get(), p.uid));
        }
    }
    let mut failed = HashMap::new();
    for ((pid, epoch), parts) in wanted {
        let targets: Vec<(String, i32, u64)> = parts
            .iter()
            .map(|(_, t, index, uid)| (t.clone(), *index, *uid))
            .collect();
        let verdicts =
            crate::coordinator::txn_markers::verify(b, txn_id, pid, epoch, &targets).await;
        for ((i, ..), v) in parts.iter().zip(verdicts) {
            if let Err(e) = v {
                failed.insert(*i, e);
            }
        }
    }
    failed
}

fn min_isr(configs: &BTreeMap<String, String>, raw: &BTreeMap<String, String>) -> i64 {
    effective_i64("min.insync.replicas", configs, raw).unwrap_or(1)
}

/// KIP-467 per-record errors (Produce v8+; older versions have no field and
/// the encoder leaves it out).
fn record_errors(e: &BrokerError, version: i16) -> Vec<BatchIndexAndErrorMessage> {
    match e {
        BrokerError::RecordErrors { records, .. } if version >= 8 => records
            .iter()
            .map(|(index, message)| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(*index)
                    .with_batch_index_error_message(Some(StrBytes::from_string(message.clone())))
            })
            .collect(),
        _ => Vec::new(),
    }
}
