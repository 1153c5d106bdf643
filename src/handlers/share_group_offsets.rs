//! DescribeShareGroupOffsets (90), AlterShareGroupOffsets (91) and
//! DeleteShareGroupOffsets (92), v0: a share group's start offset per
//! partition (where its unfinished records begin), set or dropped by an
//! administrator while the group has no members (NON_EMPTY_GROUP otherwise).

use kafka_protocol::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponsePartition, AlterShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic;
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::{
    AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse, DeleteShareGroupOffsetsRequest,
    DeleteShareGroupOffsetsResponse, DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsResponse, TopicName,
};

use super::sb;
use crate::coordinator::share_state;
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::security::acl::{Operation, ResourceType};
use crate::share::ShareKey;

/// The group is a share group (live, or with share state); GROUP_ID_NOT_FOUND if not.
fn share_group_exists(ctx: &RequestContext, group: &str) -> BrokerResult<()> {
    let b = &ctx.broker;
    if b.groups.is_share_group(group) || b.shares.groups().contains(group) {
        Ok(())
    } else {
        Err(BrokerError::GroupIdNotFound)
    }
}

/// The group may take administrative changes: a share group (or a new
/// id) without members.
fn alterable(ctx: &RequestContext, group: &str, op: Operation) -> BrokerResult<()> {
    let b = &ctx.broker;
    super::group_served(ctx, op, group)?;
    let other_type = !b.groups.is_share_group(group)
        && (b.groups.consumer_group(group).is_some()
            || b.groups.describe(group).ok().flatten().is_some()
            || b.groups.offsets.has_group(group));
    if other_type {
        return Err(BrokerError::GroupIdNotFound);
    }
    b.groups.share_check_empty(group)
}

pub async fn describe(
    ctx: &RequestContext,
    req: DescribeShareGroupOffsetsRequest,
) -> DescribeShareGroupOffsetsResponse {
    let b = &ctx.broker;
    let mut groups = Vec::new();
    for g in req.groups {
        let name = g.group_id.0.to_string();
        let resp =
            DescribeShareGroupOffsetsResponseGroup::default().with_group_id(g.group_id.clone());
        if let Err(e) = super::group_served(ctx, Operation::Describe, &name)
            .and_then(|()| share_group_exists(ctx, &name))
        {
            b.metrics.error("DescribeShareGroupOffsets", e.code());
            groups.push(
                resp.with_error_code(e.code())
                    .with_error_message(e.message()),
            );
            continue;
        }
        let requested: Vec<(String, Option<Vec<i32>>)> = match g.topics {
            Some(ts) => ts
                .into_iter()
                .map(|t| (t.topic_name.0.to_string(), Some(t.partitions)))
                .collect(),
            None => known_topics(ctx, &name)
                .into_iter()
                .map(|n| (n, None))
                .collect(),
        };
        let mut topics = Vec::new();
        for (t, parts) in requested {
            if !ctx.authorize_quiet(Operation::Describe, ResourceType::Topic, &t) {
                continue;
            }
            let topic = b.catalog.get(&t);
            let id = topic.as_ref().map(|t| t.id).unwrap_or_default();
            // Asked for all: only the partitions the group has state on.
            let all = parts.is_none();
            let parts = parts.unwrap_or_else(|| {
                (0..topic.as_ref().map_or(0, |t| t.partitions.len() as i32)).collect()
            });
            let mut partitions = Vec::new();
            for p in parts {
                let r = DescribeShareGroupOffsetsResponsePartition::default()
                    .with_partition_index(p)
                    .with_leader_epoch(-1);
                let r = match &topic {
                    Some(tp) if tp.partition(p).is_some() => {
                        let key = ShareKey {
                            group: name.as_str().into(),
                            topic_id: id,
                            partition: p,
                        };
                        match share_state::start_offset(b, &key).await {
                            Ok(None) if all => continue,
                            Ok(start) => r.with_start_offset(start.unwrap_or(-1)),
                            Err(e) => r
                                .with_start_offset(-1)
                                .with_error_code(e.code())
                                .with_error_message(e.message()),
                        }
                    }
                    _ => r
                        .with_start_offset(-1)
                        .with_error_code(BrokerError::UnknownTopicOrPartition.code()),
                };
                partitions.push(r);
            }
            topics.push(
                DescribeShareGroupOffsetsResponseTopic::default()
                    .with_topic_name(TopicName(sb(t)))
                    .with_topic_id(id)
                    .with_partitions(partitions),
            );
        }
        groups.push(resp.with_topics(topics));
    }
    DescribeShareGroupOffsetsResponse::default().with_groups(groups)
}

/// The topics a share group has state on, as far as this broker can tell:
/// those it holds or coordinates state for, and those its members subscribe to.
fn known_topics(ctx: &RequestContext, group: &str) -> Vec<String> {
    let b = &ctx.broker;
    let mut ids: std::collections::BTreeSet<uuid::Uuid> = b
        .shares
        .of_group(group)
        .into_iter()
        .map(|(k, _)| k.topic_id)
        .collect();
    if let Ok(c) = b.shares.coordinated.lock() {
        ids.extend(c.keys().filter(|k| &*k.group == group).map(|k| k.topic_id));
    }
    let mut names: std::collections::BTreeSet<String> = ids
        .iter()
        .filter_map(|id| b.catalog.get_by_id(id).map(|t| t.name.to_string()))
        .collect();
    if let Some(g) = b.groups.share_group(group) {
        names.extend(
            g.subscribed()
                .into_iter()
                .filter(|t| b.catalog.get(t).is_some()),
        );
    }
    names.into_iter().collect()
}

pub async fn alter(
    ctx: &RequestContext,
    req: AlterShareGroupOffsetsRequest,
) -> AlterShareGroupOffsetsResponse {
    let b = &ctx.broker;
    let group = req.group_id.0.to_string();
    if let Err(e) = alterable(ctx, &group, Operation::Read) {
        b.metrics.error("AlterShareGroupOffsets", e.code());
        tracing::info!(peer = %ctx.peer, group = %group, error = %e, "AlterShareGroupOffsets refused");
        return AlterShareGroupOffsetsResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message());
    }
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.topic_name.0.to_string();
        let topic = super::topic_for(ctx, &name, Operation::Read);
        let id = topic.as_ref().map(|t| t.id).unwrap_or_default();
        let mut partitions = Vec::new();
        for p in t.partitions {
            let r = match &topic {
                Ok(topic) => set_start(ctx, &group, topic, p.partition_index, p.start_offset).await,
                Err(e) => Err(e.clone()),
            };
            let resp = AlterShareGroupOffsetsResponsePartition::default()
                .with_partition_index(p.partition_index);
            partitions.push(match r {
                Ok(()) => resp,
                Err(e) => {
                    b.metrics.error("AlterShareGroupOffsets", e.code());
                    resp.with_error_code(e.code())
                        .with_error_message(e.message())
                }
            });
        }
        topics.push(
            AlterShareGroupOffsetsResponseTopic::default()
                .with_topic_name(t.topic_name)
                .with_topic_id(id)
                .with_partitions(partitions),
        );
    }
    AlterShareGroupOffsetsResponse::default().with_responses(topics)
}

/// Starts the group's share-partition afresh at `offset` (clamped to the log).
async fn set_start(
    ctx: &RequestContext,
    group: &str,
    topic: &crate::storage::catalog::Topic,
    index: i32,
    offset: i64,
) -> BrokerResult<()> {
    let b = &ctx.broker;
    let part = topic
        .partition(index)
        .cloned()
        .ok_or(BrokerError::UnknownTopicOrPartition)?;
    if offset < 0 {
        return Err(BrokerError::InvalidRequest(format!(
            "start offset {offset} is negative"
        )));
    }
    super::check_leader(ctx, topic.name.as_str(), index, -1)?;
    let offset = offset.clamp(part.log_start_offset(), part.high_watermark());
    let key = ShareKey {
        group: group.into(),
        topic_id: topic.id,
        partition: index,
    };
    let e = share_state::open(b, &key, part.leader_epoch(), || Ok(offset)).await?;
    e.lock().reset(offset);
    share_state::save(b, &key, &e).await?;
    tracing::info!(group, topic = %topic.name, partition = index, offset, "share group start offset set");
    Ok(())
}

pub async fn delete(
    ctx: &RequestContext,
    req: DeleteShareGroupOffsetsRequest,
) -> DeleteShareGroupOffsetsResponse {
    let b = &ctx.broker;
    let group = req.group_id.0.to_string();
    if let Err(e) =
        alterable(ctx, &group, Operation::Delete).and_then(|()| share_group_exists(ctx, &group))
    {
        b.metrics.error("DeleteShareGroupOffsets", e.code());
        tracing::info!(peer = %ctx.peer, group = %group, error = %e, "DeleteShareGroupOffsets refused");
        return DeleteShareGroupOffsetsResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message());
    }
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.topic_name.0.to_string();
        let r = match super::topic_for(ctx, &name, Operation::Read) {
            Ok(topic) => {
                let mut done = Ok(topic.id);
                for index in 0..topic.partitions.len() as i32 {
                    let key = ShareKey {
                        group: group.as_str().into(),
                        topic_id: topic.id,
                        partition: index,
                    };
                    if let Err(e) = share_state::remove(b, &key).await {
                        done = Err(e);
                        break;
                    }
                }
                if done.is_ok() {
                    tracing::info!(group = %group, topic = %name, "share group offsets deleted");
                }
                done
            }
            Err(e) => Err(e),
        };
        let resp = DeleteShareGroupOffsetsResponseTopic::default().with_topic_name(t.topic_name);
        topics.push(match r {
            Ok(id) => resp.with_topic_id(id),
            Err(e) => {
                b.metrics.error("DeleteShareGroupOffsets", e.code());
                resp.with_error_code(e.code())
                    .with_error_message(e.message())
            }
        });
    }
    DeleteShareGroupOffsetsResponse::default().with_responses(topics)
}
