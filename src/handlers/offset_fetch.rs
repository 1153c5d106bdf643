//! OffsetFetch (9): a group's committed offsets, for named partitions or all
//! of them; one group (v1–7) or several (v8+).

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::sb;
use crate::coordinator::offsets::Committed;
use crate::dispatch::RequestContext;

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
            for (t, p, c) in offsets.all(group) {
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

pub async fn handle(ctx: &RequestContext, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.api_version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let topics = lookup(ctx, g.group_id.0.as_str(), wanted)
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(sb(t)))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, c)| {
                                        let (o, e, m) = unpack(c);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(o)
                                            .with_committed_leader_epoch(e)
                                            .with_metadata(Some(sb(m)))
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
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let with_epoch = ctx.api_version >= 5;
    let topics = lookup(ctx, req.group_id.0.as_str(), wanted)
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(sb(t)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, c)| {
                            let (o, e, m) = unpack(c);
                            let r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_metadata(Some(sb(m)));
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
