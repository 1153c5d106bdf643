//! OffsetFetch (9): a group's committed offsets, for named partitions or all
//! of them; one group (v1–7) or several (v8+). With `require_stable` (v7+),
//! a partition with a transactional offset commit still pending answers
//! UNSTABLE_OFFSET_COMMIT, and the client asks again.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::sb;
use crate::coordinator::offsets::Committed;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::{Operation, ResourceType};

/// (topic, [(partition, committed)]) for what was asked (`None`: everything committed).
type Found = Vec<(String, Vec<(i32, Option<Committed>)>)>;

fn lookup(ctx: &RequestContext, group: &str, wanted: Option<Vec<(String, Vec<i32>)>>) -> Found {
    let offsets = &ctx.broker.groups.offsets;
    match wanted {
        Some(list) => list
            .into_iter()
            .map(|(t, parts)| {
                let found = parts
                    .into_iter()
                    .map(|p| (p, offsets.get(group, &t, p)))
                    .collect();
                (t, found)
            })
            .collect(),
        None => {
            let mut out: Found = Vec::new();
            // Topics the principal may not describe are left out.
            let visible =
                |t: &str| ctx.authorize_quiet(Operation::Describe, ResourceType::Topic, t);
            for (t, p, c) in offsets.all(group).into_iter().filter(|(t, ..)| visible(t)) {
                match out.last_mut() {
                    Some((last, parts)) if *last == t => parts.push((p, Some(c))),
                    _ => out.push((t, vec![(p, Some(c))])),
                }
            }
            out
        }
    }
}

fn unpack(c: Option<Committed>) -> (i64, i32, String) {
    c.map_or((-1, -1, String::new()), |c| {
        (c.offset, c.leader_epoch, c.metadata)
    })
}

/// Per-partition error codes: TOPIC_AUTHORIZATION_FAILED for a named topic
/// the principal may not describe, and with `require_stable`,
/// UNSTABLE_OFFSET_COMMIT for a pending transactional commit (no offset is
/// answered for either).
fn partition_codes(
    ctx: &RequestContext,
    group: &str,
    found: &mut Found,
    require_stable: bool,
) -> Vec<Vec<i16>> {
    found
        .iter_mut()
        .map(|(topic, parts)| {
            let allowed = ctx.authorize(Operation::Describe, ResourceType::Topic, topic);
            parts
                .iter_mut()
                .map(|(p, c)| {
                    let error = if !allowed {
                        Some(BrokerError::TopicAuthorizationFailed)
                    } else if require_stable && pending_txn_offset(&ctx.broker, group, topic, *p) {
                        Some(BrokerError::UnstableOffsetCommit)
                    } else {
                        None
                    };
                    match error {
                        Some(e) => {
                            *c = None;
                            ctx.broker.metrics.error("OffsetFetch", e.code());
                            e.code()
                        }
                        None => 0,
                    }
                })
                .collect()
        })
        .collect()
}

pub async fn handle(ctx: &RequestContext, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.api_version >= 8 {
        let groups =
            req.groups
                .into_iter()
                .map(|g| {
                    // v9+: a consumer group's member fetches with its epoch.
                    let member_checked =
                        super::group_served(ctx, Operation::Describe, g.group_id.0.as_str())
                            .and_then(|()| match g.member_id.as_deref() {
                                Some(m) if ctx.api_version >= 9 && !m.is_empty() => ctx
                                    .broker
                                    .groups
                                    .consumer_commit_check(g.group_id.0.as_str(), m, g.member_epoch)
                                    .unwrap_or(Ok(())),
                                _ => Ok(()),
                            });
                    if let Err(e) = member_checked {
                        ctx.broker.metrics.error("OffsetFetch", e.code());
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id)
                            .with_error_code(e.code());
                    }
                    let wanted = g.topics.map(|ts| {
                        ts.into_iter()
                            .map(|t| (t.name.0.to_string(), t.partition_indexes))
                            .collect()
                    });
                    let mut found = lookup(ctx, g.group_id.0.as_str(), wanted);
                    let codes =
                        partition_codes(ctx, g.group_id.0.as_str(), &mut found, req.require_stable);
                    let topics = found
                        .into_iter()
                        .enumerate()
                        .map(|(ti, (t, parts))| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(sb(t)))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .enumerate()
                                        .map(|(pi, (p, c))| {
                                            let (o, e, m) = unpack(c);
                                            let code = codes
                                                .get(ti)
                                                .and_then(|c| c.get(pi))
                                                .copied()
                                                .unwrap_or(0);
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(o)
                                                .with_committed_leader_epoch(e)
                                                .with_metadata(Some(sb(m)))
                                                .with_error_code(code)
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_topics(topics)
                })
                .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if let Err(e) = super::group_served(ctx, Operation::Describe, req.group_id.0.as_str()) {
        ctx.broker.metrics.error("OffsetFetch", e.code());
        // v0-1 have no top-level error: Kafka puts it on every partition asked for.
        if ctx.api_version < 2 {
            let topics = req
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(
                            t.partition_indexes
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_metadata(Some(sb("")))
                                        .with_error_code(e.code())
                                })
                                .collect(),
                        )
                })
                .collect();
            return OffsetFetchResponse::default().with_topics(topics);
        }
        return OffsetFetchResponse::default().with_error_code(e.code());
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let with_epoch = ctx.api_version >= 5;
    let mut found = lookup(ctx, req.group_id.0.as_str(), wanted);
    let codes = partition_codes(
        ctx,
        req.group_id.0.as_str(),
        &mut found,
        ctx.api_version >= 7 && req.require_stable,
    );
    let topics = found
        .into_iter()
        .enumerate()
        .map(|(ti, (t, parts))| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(sb(t)))
                .with_partitions(
                    parts
                        .into_iter()
                        .enumerate()
                        .map(|(pi, (p, c))| {
                            let (o, e, m) = unpack(c);
                            let code = codes.get(ti).and_then(|c| c.get(pi)).copied().unwrap_or(0);
                            let r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_metadata(Some(sb(m)))
                                .with_error_code(code);
                            if with_epoch {
                                r.with_committed_leader_epoch(e)
                            } else {
                                r
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// True if a transaction not ended yet holds an offset for this partition
/// of the group: the transaction coordinator keeps them standalone, the
/// group coordinator in a cluster.
fn pending_txn_offset(b: &crate::broker::Broker, group: &str, topic: &str, partition: i32) -> bool {
    if b.cluster.is_standalone() {
        b.txns.has_pending_offset(group, topic, partition)
    } else {
        b.groups.txn_offsets.has(group, topic, partition)
    }
}
